"""The pyfunc model's code, logged as a file ("models from code"): MLflow runs this file when the
model is loaded, so no pickled Python object is stored with the model."""

from mlflow.models import set_model

from pipeline.training.registry import EnsemblePyfunc

set_model(EnsemblePyfunc())
