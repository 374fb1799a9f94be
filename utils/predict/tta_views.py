"""The TTA names and how many views each averages: one torch-free table.

Read by prediction (utils/predict/tta.py makes the views), by `--tta auto`
(utils/predict/tta_choice.py prefers the most views) and by the budget planner
(utils/grid/budget_costs.py: a prediction costs images x views). tests/predict/test_tta.py
checks that each name here makes exactly this many views.
"""

# name -> views per image, most views first (hflip before vflip: the usual mirror of photos)
TTA_VIEWS = {"10crop+full": 12, "10crop": 10, "d4": 8, "5crop": 5, "multiscale": 3, "hflip": 2, "vflip": 2,
             "none": 1}
TTA_NAMES = ("none", "hflip", "vflip", "d4", "5crop", "10crop", "10crop+full", "multiscale")

MERGES = ("mean", "gmean", "max", "tsharpen")  # how a TTA's views are merged (utils/predict/tta.py)
CROP_FRAC = 0.875  # the side of 5crop/10crop views, a fraction of the image's
