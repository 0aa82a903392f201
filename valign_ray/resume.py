"""``valign run --resume RUN_DIR``: continue a run from its own config snapshot.

``RUN_DIR/config.yaml`` is the resolved config the run wrote (:mod:`valign_ray.pipeline`), with
the pseudonymisation salt redacted; the salt comes back from ``VALIGN_SALT`` (collected survey
files refuse to run without it: :func:`valign_ray.config.survey_salt`). The run directory is
the one given, wherever the run was started from. Rerunning then skips every finished stage by
fingerprint and Ray Train resumes an interrupted training run from its latest checkpoint; a
salt other than the run's would redo the survey stage, so it is refused instead.
"""

from __future__ import annotations

from pathlib import Path

from valign_ray.config import DEFAULT_SALT, PipelineConfig, load_config
from valign_ray.config_loader import ConfigError
from valign_ray.errors import InputError


def resume_config(
    run_dir: str | Path, overrides: list[str] | tuple[str, ...] = ()
) -> PipelineConfig:
    """The config of the run in ``run_dir`` (its snapshot, the salt left to ``VALIGN_SALT``),
    placed at ``run_dir``, plus ``overrides``."""
    run_dir = Path(run_dir)
    snapshot = run_dir / "config.yaml"
    if not run_dir.is_dir():
        raise InputError("run directory not found", path=run_dir)
    if not snapshot.is_file():
        raise InputError(
            "no config.yaml (the config snapshot a run writes first): not a run directory",
            path=run_dir,
        )
    placed = [f"output_dir={run_dir.parent}", f"name={run_dir.name}"]
    return load_config(snapshot, [f"survey.salt={DEFAULT_SALT}", *placed, *overrides])


def check_same_survey(cfg: PipelineConfig) -> None:
    """Refuse to resume when the survey stage's fingerprint (the salt's hash, the survey
    section, its input files) differs from the recorded one: the survey would be redone."""
    from valign_ray.config import survey_salt
    from valign_ray.pipeline import layout_of, recorded_summary
    from valign_ray.stages import STAGES, StageContext

    layout = layout_of(cfg)
    try:  # collected files without VALIGN_SALT: say so first
        survey_salt(cfg.survey)
    except ConfigError:
        raise ConfigError(
            f"--resume {layout.run_dir}: its config.yaml holds the pseudonymisation salt "
            "redacted, and collected survey files need it: set VALIGN_SALT to the run's salt "
            "(export VALIGN_SALT=...)"
        ) from None
    earlier = recorded_summary(layout)
    recorded = earlier.fingerprints.get("survey") if earlier else None
    if recorded is None:
        return
    stage = next(s for s in STAGES if s.name == "survey")
    if stage.fingerprint(StageContext(cfg=cfg, layout=layout)) != recorded:
        raise ConfigError(
            f"--resume {layout.run_dir}: the survey stage's inputs differ from the recorded "
            "run (another salt in VALIGN_SALT, or changed survey files): resuming would redo "
            "it; set VALIGN_SALT to the run's salt, or start a new run with its CONFIG"
        )
