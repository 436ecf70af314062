"""The MLflow model that `embalance export` logs, as code (MLflow's "models from code"): no pickled object.

MLflow runs this file (it is not imported as part of the package) when the model is logged and each time it is
loaded: it builds the model from :mod:`embalance.serving.predict`, which is shipped beside it in the model's
``code/`` folder (``code_paths``), so loading needs neither PyTorch nor the rest of embalance, and unpickles nothing.
"""

from __future__ import annotations

import warnings

import mlflow

# EmbalanceTextModel.predict is untyped on purpose (the logged signature is explicit), and MLflow says so with a
# UserWarning ("Add type hints to the `predict` method") when the class is defined, i.e. at every load: nothing a
# user can act on. MLflow shows it under its own "once" filter, so it is caught here; other warnings are shown.
# The cause is fixed by annotating `model_input` in serving/predict.py (embalance.cli does the same).
with warnings.catch_warnings(record=True) as caught:
    from embalance.serving.predict import EmbalanceTextModel
for w in caught:
    if "Add type hints to the `predict` method" not in str(w.message):
        warnings.showwarning(w.message, w.category, w.filename, w.lineno)

mlflow.models.set_model(EmbalanceTextModel())
