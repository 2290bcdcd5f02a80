"""Using a trained run: `Recommender` (``recommender``), reading a run directory (``runs``), exact and faiss
retrieval (``retrieval``) and the servable SavedModel (``saved_model``)."""

from cml_tf import lazy_exports

__getattr__ = lazy_exports(
    __name__,
    {"Recommender": "cml_tf.serving.recommender", "RecommendError": "cml_tf.serving.runs"},
    tensorflow=("Recommender",),
)
