"""The public evaluation API: scoring a model bundle on held-out clips the way ``disenttalk
evaluate`` does. The evaluate stage (:mod:`workflows.evaluate`) and the searches in ``tune/``
(sweeps, the sampler search) import from here, and only from here.

- settings: :class:`EvaluateConfig`, the system names (:data:`SYSTEM`, :data:`REFERENCES`),
  :func:`clip_seed` (each clip's sampler seed), :func:`gap_closed`;
- clips: :func:`select_clips`, :func:`voice_groups`, :func:`corpus_info` (what the corpus
  manifest adds), :func:`speaker_blink_rates`;
- the image a clip is rendered onto: :func:`reference_image`, :func:`tracked_reference`;
- lips as the evaluator reads them: :func:`fill_gaps`, :func:`landmark_lips`;
- the evaluator sync expert: :func:`evaluator_dir`, :data:`EVALUATOR_BASIS`;
- scoring: :func:`evaluate_clip` (one clip), :func:`score_clips` (clips as Ray tasks),
  :func:`aggregate` (per-split tables);
- reporting: :func:`markdown`, :func:`plot_split`.

Modules: ``config``, ``selection``, ``reference``, ``lips``, ``clip_task``, ``evaluator``,
``scoring``, ``report``.
"""

from workflows.evaluation.clip_task import evaluate_clip
from workflows.evaluation.config import REFERENCES, SYSTEM, EvaluateConfig, clip_seed, gap_closed
from workflows.evaluation.evaluator import EVALUATOR_BASIS, evaluator_dir
from workflows.evaluation.lips import fill_gaps, landmark_lips
from workflows.evaluation.reference import reference_image, tracked_reference
from workflows.evaluation.report import markdown, plot_split
from workflows.evaluation.scoring import aggregate, score_clips
from workflows.evaluation.selection import (
    corpus_info,
    select_clips,
    speaker_blink_rates,
    voice_groups,
)

__all__ = [
    "EVALUATOR_BASIS", "REFERENCES", "SYSTEM", "EvaluateConfig", "aggregate", "clip_seed", "corpus_info",
    "evaluate_clip", "evaluator_dir", "fill_gaps", "gap_closed", "landmark_lips", "markdown", "plot_split",
    "reference_image", "score_clips", "select_clips", "speaker_blink_rates", "tracked_reference",
    "voice_groups",
]
