"""Training: corpora -> Whisper-prefix encoding cache -> Keras head -> one ONNX graph in a bundle (``ser-train``).

Kept free of heavy imports, so that ``ser-train --help`` shows these without loading TensorFlow.
"""

#: Name of the model the recipe builds (its model id is ``name@version``).
MODEL_NAME = "ser-cnn-lstm"
#: The version of the shipped model (``models/default``; a test keeps the two equal). Its card, the
#: docs' figures and ``ser-train fit --model-version MODEL_VERSION`` (reproducing it) use it.
MODEL_VERSION = "3.1.0"
#: The version a new ``ser-train fit`` run writes unless told otherwise: the next model. Bump the
#: version for every model shipped, so that a worker pool never mixes two models under one id.
NEXT_MODEL_VERSION = "3.2.0"
