"""The MLflow model that `embalance export` logs, as code (MLflow's "models from code"): no pickled object.

MLflow runs this file (it is not imported as part of the package) when the model is logged and each time it is
loaded: it builds the model from :mod:`embalance.serving.predict`, which is shipped beside it in the model's
``code/`` folder (``code_paths``), so loading needs neither PyTorch nor the rest of embalance, and unpickles nothing.
"""

from __future__ import annotations

import mlflow

from embalance.serving.predict import EmbalanceTextModel

mlflow.models.set_model(EmbalanceTextModel())
