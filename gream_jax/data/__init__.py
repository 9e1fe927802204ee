"""Data layer: loaders for every supported format, the leave-one-out split, prepare stage, grain pipelines.

Contract (docs/DESIGN.md): `load_dataset(config) -> InteractionData`, `Split`,
`run_prepare(config, workdir) -> dict`, `load_prepared(workdir) -> (InteractionData, Split)`.
The grain helpers live in `gream_jax.data.pipeline` (imported on demand: it pulls in grain and jax).
"""

from gream_jax.data.loaders import load_dataset  # noqa: F401
from gream_jax.data.prepare import load_prepared, run_prepare  # noqa: F401
from gream_jax.data.split import Split, drop_short_users, leave_one_out  # noqa: F401
from gream_jax.data.types import DataFormatError, InteractionData, ItemText  # noqa: F401
