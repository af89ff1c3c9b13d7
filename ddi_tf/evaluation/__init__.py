"""What a trained model is worth: policies (threshold, budget, DDI), prediction and ``report.json``
(``evaluate``), and side-by-side tables and plots of several reports (``compare``). Imports the data, model and
core layers.
"""
