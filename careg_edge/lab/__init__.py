"""The lab: the research that produced the product, apart from the product itself.

What is here: the few-shot evaluation protocol (`protocol`, with the dataset walking
in `datasets` that evaluation and training share, the passes over a category's
images in `image_passes`, one round's result in `round_result`, its on-disk cache
in `round_cache`), the metrics (`metrics`, `line_metrics`), the evaluation report
(`report`), registration training (`train/`), the synthetic training categories
(`synth_categories`) and the bundled encoder's model-card writer (`model_card`).

Why apart: a maintainer of the product (the API, preprocessing, runtimes,
estimators, the profile format, calibration, live/serve, export and the CLI) should
not have to read research code, and research code should be free to change without
touching what users run. The product never imports the lab at module level;
`tests/test_product_lab_split.py` checks it. The lab ships in the wheel all the
same, so `careg-edge eval` and `careg-edge train` work from an install: those
commands import it inside their functions.

The demo is a product command (it is how a user first meets the product), so its
page (`careg_edge/demo_report.py`) and its line check stay in the product. The one
figure it borrows from the lab, the image AUROC over its 16 test images, is
imported from `lab.metrics` inside the function that prints it: one tested AUROC
rather than a second copy in the product, and `import careg_edge` still loads no
lab module.
"""
