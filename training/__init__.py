"""Training: corpora -> features -> Keras CNN-BiLSTM -> ONNX bundle (``ser-train``)."""

#: Name and version of the model the recipe builds (its model id is ``name@version``); bump the
#: version for every model shipped, so that a worker pool never mixes two models under one id.
#: Kept here, free of heavy imports, so that ``ser-train --help`` shows them without loading scipy.
MODEL_NAME = "ser-cnn-lstm"
MODEL_VERSION = "2.0.0"

#: How corpora share a label in the balanced sampler (``training.train.sampling_weights``).
CORPUS_SHARES = ("equal", "sqrt-speakers")
#: The default. "sqrt-speakers" scored 6 points higher on CREMA-D test speakers in a Keras-on-JAX sweep
#: but not in two TensorFlow CPU runs of the full recipe (docs/training.md, "Development notes").
DEFAULT_CORPUS_SHARE = "equal"
