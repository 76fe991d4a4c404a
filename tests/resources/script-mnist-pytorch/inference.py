"""SageMaker inference handlers of the ConvNet (mlmonitor use_case_mnist_pt/inference.py style).

Requests: raw MNIST pixels (0-255), as ``application/json`` ``{"instances": [...]}`` (or a bare
list) or ``application/x-npy``; each image 28x28, 784 values or 1x28x28. Responses: the class
probabilities, shape (N, 10), as JSON (a list of lists) or NPY.
"""
import io
import json
import os

import numpy as np
import torch

from pt_models import ConvNet

MEAN, STD = 0.1307, 0.3081
JSON, NPY = "application/json", "application/x-npy"


def model_fn(model_dir):
    model = ConvNet()
    with open(os.path.join(model_dir, "model.pth"), "rb") as handle:
        model.load_state_dict(torch.load(handle, map_location="cpu"))
    model.eval()
    return model


def input_fn(request_body, request_content_type):
    if request_content_type == JSON:
        document = json.loads(request_body)
        instances = document["instances"] if isinstance(document, dict) else document
        pixels = np.asarray(instances, dtype=np.float32)
    elif request_content_type == NPY:
        pixels = np.load(io.BytesIO(request_body), allow_pickle=False).astype(np.float32)
    else:
        raise ValueError(f"unsupported content type {request_content_type!r}: send {JSON} or {NPY}")
    if pixels.size == 0 or pixels.size % 784:
        raise ValueError(f"expected 28x28 images (784 values each), got an array of shape {pixels.shape}")
    images = pixels.reshape(-1, 1, 28, 28)
    return torch.from_numpy((images / 255.0 - MEAN) / STD)


def predict_fn(input_data, model):
    with torch.no_grad():
        return torch.exp(model(input_data))


def output_fn(prediction, accept):
    probabilities = prediction.cpu().numpy().astype(np.float32)
    if accept in (JSON, "*/*", None, ""):
        return json.dumps(probabilities.tolist())
    if accept == NPY:
        buffer = io.BytesIO()
        np.save(buffer, probabilities)
        return buffer.getvalue()
    raise ValueError(f"unsupported accept type {accept!r}: ask for {JSON} or {NPY}")
