"""The tabular example's network: a small Keras MLP, your own model code (``model.class: nets.py:mlp``).

modelcycle calls it with ``input_shape`` (``(W,)``: the encoded width of one record — numerical
columns standardised, categorical ones one-hot) and ``num_classes``, plus the ``model.options``;
the model must end in softmax. modelcycle compiles it with the configured optimizer.
"""

import keras


def mlp(input_shape: tuple[int, ...], num_classes: int, units: int = 64, dropout: float = 0.2) -> keras.Model:
    """Dense → Dropout → Dense → Dense softmax."""
    inputs = keras.Input(shape=input_shape)
    x = keras.layers.Dense(units, activation="relu")(inputs)
    x = keras.layers.Dropout(dropout)(x)
    x = keras.layers.Dense(units, activation="relu")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="mlp")
