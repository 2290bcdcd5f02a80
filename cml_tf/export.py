"""Export a trained run as a TensorFlow SavedModel: ``python -m cml_tf.export --model_dir=DIR --export_dir=OUT``.

Flags: ``--k`` (items per user, fixed in the SavedModel; default 10), ``--seen`` (train | all), ``--data_path``,
``--overwrite``, ``--memory_mb``. The SavedModel, its signatures (``serving_default``: user ids -> ``items``,
``scores``, ``known``; ``similar_items``) and what unknown ids return are described in `cml_tf.serving`. It loads
with ``tf.saved_model.load`` in a process without cml_tf. Bad input: one line ``error: ...``, exit code 1.
TensorFlow's start-up lines are hidden unless ``-v 1``.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported: no C++ INFO lines


from absl import flags

from cml_tf.cli import console
from cml_tf.data.interactions import DataError
from cml_tf.serving.recommender import Recommender
from cml_tf.serving.runs import SEEN_CHOICES, RecommendError
from cml_tf.serving.saved_model import export_saved_model

flags.DEFINE_string("model_dir", None, "Run directory of a finished `python -m cml_tf.train` run.")
flags.DEFINE_string("export_dir", None, "Output directory of the SavedModel (e.g. exports/NAME/1 for TF Serving).")
flags.DEFINE_integer("k", 10, "Items returned per user (fixed in the SavedModel).")
flags.DEFINE_enum("seen", "train", list(SEEN_CHOICES), "Seen items: train (training + validation) or all.")
flags.DEFINE_string("data_path", None, "Where the run's data set is, if not where its config.json says.")
flags.DEFINE_bool("overwrite", False, "Replace an existing --export_dir.")
flags.DEFINE_integer("memory_mb", 256, "Bound on the serving score block, in MB.")
FLAGS = flags.FLAGS


_fail = console.fail


def main() -> None:
    verbose = FLAGS.verbosity >= 1
    console.setup_logging(verbose)
    try:
        if not FLAGS.model_dir:
            raise RecommendError("--model_dir is required (a run directory of python -m cml_tf.train)")
        if not FLAGS.export_dir:
            raise RecommendError("--export_dir is required (where to write the SavedModel)")
        if FLAGS.k < 1:
            raise RecommendError(f"--k must be a positive integer, got {FLAGS.k}")
        if FLAGS.memory_mb < 1:
            raise RecommendError(f"--memory_mb must be positive, got {FLAGS.memory_mb}")
        rec = Recommender.from_run(FLAGS.model_dir, seen=FLAGS.seen, data_path=FLAGS.data_path)
        if FLAGS.k > rec.n_items - 1:
            raise RecommendError(
                f"--k={FLAGS.k} exceeds the catalogue less the queried item ({rec.n_items - 1:,} items)"
            )
        console.import_tensorflow(verbose)  # quiet start-up lines; only once the input is known to be good
        export_saved_model(
            rec,
            FLAGS.export_dir,
            FLAGS.k,
            overwrite=FLAGS.overwrite,
            memory_bytes=FLAGS.memory_mb << 20,
            info={"model_dir": os.path.abspath(FLAGS.model_dir), "seen": FLAGS.seen},
        )
    except (RecommendError, DataError) as e:
        _fail(str(e))
    print(
        f"exported {FLAGS.model_dir} ({rec.n_users:,} users, {rec.n_items:,} items, k={FLAGS.k}) to "
        f"{FLAGS.export_dir}: signatures serving_default(users) and similar_items(items)"
    )


def run() -> None:
    console.run_command(main, FLAGS)


if __name__ == "__main__":
    run()
