"""Knowledge distillation: train a smaller student (e.g. the model after structured pruning) on a teacher's outputs.

`distill(teacher, student, train, validation)` returns a trained copy of the student with the weights of its
best validation epoch; `holdout(train)` carves the validation split when only training data is given.
"""

from edgeml.compress.distill.trainer import DistillConfig, DistillResult, EpochCallback, distill, holdout

SUPPORTS = {
    "input": "torch",                 # nn.Module teacher and student with the same inputs and outputs
    "training_data": "required",
    "labels": "optional",             # without labels: soft targets from the teacher only
    "losses": {"classifier logits (N x C)": "KL divergence at a temperature", "other outputs": "MSE"},
}

__all__ = ["SUPPORTS", "DistillConfig", "DistillResult", "EpochCallback", "distill", "holdout"]
