"""Set A / set B splits: the named ones, random ones, custom files, and what must be refused."""
import json

import pytest

from maskx.data.embedded import categories, voc_like_category_ids
from maskx.data.splits import SplitError, resolve_split, split_names

CATS = categories()
VOC = voc_like_category_ids()


def test_voc_splits():
    s = resolve_split("voc2nonvoc", CATS, voc_like_ids=VOC)
    assert list(s.a_ids) == VOC and len(s.b_ids) == 60
    r = resolve_split("nonvoc2voc", CATS, voc_like_ids=VOC)
    assert r.a_ids == s.b_ids and r.b_ids == s.a_ids
    assert s.set_of(VOC[0]) == "A" and r.set_of(VOC[0]) == "B"


def test_voc_by_coco_names():
    from maskx.data.splits import COCO_VOC_NAMES
    cats = [{"id": 100 + k, "name": n} for k, n in enumerate(sorted(COCO_VOC_NAMES))]
    cats += [{"id": 200 + k, "name": f"other{k}"} for k in range(5)]
    s = resolve_split("voc2nonvoc", cats)
    assert len(s.a_ids) == 20 and len(s.b_ids) == 5


def test_voc_split_needs_twenty_voc_classes():
    with pytest.raises(SplitError, match="20 VOC classes"):
        resolve_split("voc2nonvoc", [{"id": 1, "name": "person"}, {"id": 2, "name": "zebra"}])


@pytest.mark.parametrize("k", [20, 30, 40, 50, 60])
def test_random_splits(k):
    trials = [resolve_split(f"rand{k}_t{t}", CATS) for t in range(5)]
    for s in trials:
        assert len(s.a_ids) == k and len(s.b_ids) == 80 - k
        assert set(s.a_ids).isdisjoint(s.b_ids) and set(s.a_ids) | set(s.b_ids) == set(c["id"] for c in CATS)
    assert len({s.a_ids for s in trials}) == 5, "trials must differ"
    assert resolve_split(f"rand{k}_t0", CATS) == trials[0], "deterministic"
    assert resolve_split(f"rand{k}_t0", CATS, seed=1) != trials[0], "the seed changes the draw"


def test_split_names_cover_the_study():
    names = split_names()
    assert len(names) == 2 + 25 and len(set(names)) == 27
    for n in names:
        resolve_split(n, CATS, voc_like_ids=VOC)


@pytest.mark.parametrize("name, msg", [("rand0_t0", "empty A or B"), ("rand80_t0", "empty A or B"),
                                       ("all", "empty set B"), ("voc", "unknown split")])
def test_refused(name, msg):
    with pytest.raises(SplitError, match=msg):
        resolve_split(name, CATS, voc_like_ids=VOC)


def test_all_allowed_for_oracle_training():
    s = resolve_split("all", CATS, require_b=False)
    assert len(s.a_ids) == 80 and s.b_ids == ()


def test_custom_file(tmp_path):
    good = tmp_path / "mine.json"
    good.write_text(json.dumps({"A": [1, 2, 3]}))
    s = resolve_split(str(good), CATS)
    assert s.a_ids == (1, 2, 3) and s.name == "mine"
    for content, msg in [({"A": []}, "empty set A"), ({"A": [1, 12]}, "not in the dataset"),
                         ({"B": [1]}, "list field 'A'"), ({"A": ["1"]}, "integer")]:
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps(content))
        with pytest.raises(SplitError, match=msg):
            resolve_split(str(bad), CATS)
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(SplitError, match="not valid JSON"):
        resolve_split(str(tmp_path / "broken.json"), CATS)
    with pytest.raises(SplitError, match="does not exist"):
        resolve_split(str(tmp_path / "missing.json"), CATS)
    everything = tmp_path / "everything.json"
    everything.write_text(json.dumps({"A": [c["id"] for c in CATS]}))
    with pytest.raises(SplitError, match="empty set B"):
        resolve_split(str(everything), CATS)
