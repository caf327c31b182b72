"""The ablation-study harness: the paper's Tables 1a-d, 2 and Figure 3 rerun on the embedded data.

- ``plan``: scales (data, iterations, seeds) and the runs each table needs;
- ``runner``: ``Study`` trains what is missing, resumably, several processes at once;
- ``evaluation``, ``detection_cache``: COCO AP on A and B, stage-wise runs scored on one cached
  set of detections per detector;
- ``results``: reading ``results/*.json``; ``report``, ``cost``: RESULTS.md; ``plots``: the
  notebooks' charts.

Commands: ``python -m maskx study plan|run|report``. Built on the library (``maskx``), which never
imports this package.
"""
