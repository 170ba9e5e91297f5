"""Tagging datasets beyond one machine: ``python -m tagger dataset SRC --output OUT`` on Ray Data.

One streaming Ray Data pipeline, so memory stays flat however large SRC is:

1. listing (the driver): SRC's images and WebDataset shards, each with what OUT already holds for it;
2. decode (Ray tasks on CPUs): read the bytes, hash them (the probability cache's content hash), skip what OUT
   holds (key + content hash + model id), decode and preprocess with the engine's ``prepare_source``; a bad
   file becomes a failed row, never a failed run;
3. inference (an actor pool, one model session per actor, a GPU each when the cluster has them): the engine's
   ``create_session`` and ``LoadedModel.run``. The model is resolved once, on the driver (``Tagger``: models
   folder, Hugging Face cache or one download); actors on the driver's node load those files, actors on other
   nodes get the same bytes once per node through the object store;
4. write (Ray tasks): ``postprocess`` under the tag options, one Parquet file per block written atomically and
   named after its rows, failures into ``OUT/_errors``, and with ``--captions`` the caption files beside local
   images, written by the same code as ``tag DIR`` (``batch.write_outputs``).

Ray retries the tasks and restarts the actors of a worker or node that dies. A block written again after a
retry lands under the same name; a row that still came out twice (a retried block batched otherwise) is
removed by the scan of OUT that ends every run and starts the next. Ray, pyarrow and fsspec are imported here
only, inside the functions that need them: nothing else in the project imports Ray.

``sources`` lists and reads SRC, ``output`` is OUT (schema, whole-file writes, the repairing scan), ``stages``
the three Ray stages and the model's way to each node, ``run`` the cluster plan, the pipeline and the summary.
"""

from tagger.dataset.common import DatasetError
from tagger.dataset.output import errors_schema, output_schema
from tagger.dataset.run import DatasetConfig, DatasetSummary, parse_actors, run_dataset

__all__ = [
    "DatasetConfig",
    "DatasetError",
    "DatasetSummary",
    "errors_schema",
    "output_schema",
    "parse_actors",
    "run_dataset",
]
