"""The pipeline's stages in order (see :mod:`valign_ray.pipeline`)."""

from valign_ray.stages.base import Stage, StageContext
from valign_ray.stages.survey import CONSTITUTION, SURVEY, WEIGHTS
from valign_ray.stages.training import DATASETS, EVAL, MODEL, REFERENCE, TRAIN

STAGES: tuple[Stage, ...] = (SURVEY, WEIGHTS, CONSTITUTION, DATASETS, MODEL, REFERENCE, TRAIN, EVAL)

__all__ = ["STAGES", "Stage", "StageContext"]
