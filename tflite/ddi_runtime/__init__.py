"""ddi_runtime: run ddi_tf int8 exports on a board (LiteRT / tflite-runtime / Edge TPU) under hard budgets.

Imports numpy and a TFLite interpreter only, never TensorFlow (unless ``interpreter='tensorflow'``).
"""

from ddi_runtime.manifest import ManifestWarning, ModelError, check_costs, cost_digest, file_sha256, load_manifest
from ddi_runtime.scheduler import BudgetError, Result, Scheduler, check_budget_value

__all__ = ["BudgetError", "ManifestWarning", "ModelError", "Result", "Scheduler", "check_budget_value", "check_costs",
           "cost_digest", "file_sha256", "load_manifest"]
__version__ = "0.1.0"
