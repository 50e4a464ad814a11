"""DPO-family preference losses: pure functions on sequence log-probs, one table that describes them.

`functions` holds the per-pair formulas, `table` one `LossSpec` per `loss_type` name (reference,
parameters, config requirements, metrics), `combine.compute_loss` the weighted sum a step uses.
Only torch and vlmdpo.types are imported here: no model, no config, no hidden state.
"""
from vlmdpo.losses.bco import RunningMean, bco_batch_reward
from vlmdpo.losses.combine import compute_loss
from vlmdpo.losses.settings import DEFAULT_BETA, LossSettings
from vlmdpo.losses.table import LOSS_SPECS, LOSS_TYPES, LossSpec, loss_problems, metric_names, needs_reference

__all__ = [
    "DEFAULT_BETA", "LOSS_SPECS", "LOSS_TYPES", "LossSettings", "LossSpec", "RunningMean", "bco_batch_reward",
    "compute_loss", "loss_problems", "metric_names", "needs_reference",
]
