"""Knowledge distillation: train a smaller student (e.g. the model after structured pruning) on a teacher's outputs.

`distill(teacher, student, train, validation)` returns a trained copy of the student with the weights of its
best validation epoch; `holdout(train)` carves the validation split when only training data is given.
"""

from edgeml.compress.base import Supports
from edgeml.compress.distill.trainer import DistillConfig, DistillResult, EpochCallback, distill, holdout

# Teacher and student are nn.Modules with the same inputs and outputs; without labels the student learns the teacher's
# outputs only (the losses: trainer.distill).
SUPPORTS = Supports(name="distill", input="torch", training=True, labels="optional")

__all__ = ["SUPPORTS", "DistillConfig", "DistillResult", "EpochCallback", "distill", "holdout"]
