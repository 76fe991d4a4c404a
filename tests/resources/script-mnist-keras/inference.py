"""SageMaker inference handlers for the Keras MNIST CNN (TensorFlow SavedModel under 1/).

Requests: JSON {"instances": [...]} of raw 0-255 pixels (28x28 images, any nesting that holds
784 values per image) or a .npy array of them. Answers: JSON {"predictions": [[p0..p9], ...]}
or, for Accept: application/x-npy, the (N, 10) probability array.
"""

import io
import json
import os

import numpy as np

JSON = "application/json"
NPY = "application/x-npy"


def model_fn(model_dir):
    import tensorflow as tf

    return tf.saved_model.load(os.path.join(model_dir, "1"))


def input_fn(request_body, request_content_type):
    if request_content_type == JSON:
        document = json.loads(request_body)
        if not isinstance(document, dict) or "instances" not in document:
            raise ValueError('send {"instances": [...]} of raw pixels')
        array = np.asarray(document["instances"], dtype=np.float32)
    elif request_content_type == NPY:
        array = np.load(io.BytesIO(request_body), allow_pickle=False).astype(np.float32)
    else:
        raise ValueError(f"unsupported content type {request_content_type}: send {JSON} or {NPY}")
    if array.size == 0 or array.size % 784:
        raise ValueError(f"expected 28x28 images (784 values each), got shape {list(array.shape)}")
    return array.reshape(-1, 28, 28, 1)


def predict_fn(input_data, model):
    import tensorflow as tf

    return model.serve(tf.constant(input_data, dtype=tf.float32)).numpy()


def output_fn(prediction, accept):
    if accept == NPY:
        buffer = io.BytesIO()
        np.save(buffer, prediction.astype(np.float32))
        return buffer.getvalue(), NPY
    return json.dumps({"predictions": prediction.tolist()}), JSON
