"""Curation: all raw quarters -> de-duplicated, case-level analysis tables in ``DIR/curated/``.

Stages, one module each: :mod:`.versions` (deleted lists, version collapse), :mod:`.drugs` (ingredients,
ketamine-family classification), :mod:`.reactions` (PTs, indications, PT groups), :mod:`.duplicates`
(cross-case duplicate flags), :mod:`.run` (orchestration, outputs, funnel, manifest). Rules and their tests:
``docs/dedup-policy.md``.
"""

from pipeline.curate.reactions import pt_groups_frame, pt_key
from pipeline.curate.run import CURATE_VERSION, curate, fingerprint
from pipeline.curate.tables import CURATED

__all__ = ["curate", "pt_groups_frame", "pt_key", "fingerprint", "CURATED", "CURATE_VERSION"]
