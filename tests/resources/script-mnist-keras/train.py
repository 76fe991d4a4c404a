"""Train a Keras CNN on MNIST the SageMaker way (script mode).

SageMaker passes the hyperparameters as command-line arguments and the locations as SM_*
variables: SM_MODEL_DIR (save the model here), SM_CHANNEL_TRAINING and SM_CHANNEL_TESTING
(the MNIST IDX .gz files). The SavedModel goes under SM_MODEL_DIR/1/, TensorFlow Serving's
version directory.
"""

import argparse
import gzip
import os
import struct

import numpy as np
import tensorflow as tf
from tensorflow import keras


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    _, kind, dims = struct.unpack(">HBB", data[:4])
    shape = struct.unpack(">" + "I" * dims, data[4:4 + 4 * dims])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load_split(channel, prefix):
    images = read_idx(os.path.join(channel, f"{prefix}-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(channel, f"{prefix}-labels-idx1-ubyte.gz"))
    return images.reshape(-1, 28, 28, 1).astype("float32"), labels.astype("int64")


def build_model(learning_rate):
    model = keras.Sequential([
        keras.Input(shape=(28, 28, 1)),
        keras.layers.Rescaling(1.0 / 255),
        keras.layers.Conv2D(32, 3, activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(64, 3, activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(),
        keras.layers.Dropout(0.25),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


class SeedLog(keras.callbacks.Callback):
    """Prints the seeds' 'Train Epoch: ...' lines."""

    def __init__(self, epoch_size, batch_size, log_interval):
        super().__init__()
        self.epoch_size, self.batch_size, self.log_interval = epoch_size, batch_size, log_interval
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch + 1

    def on_train_batch_end(self, batch, logs=None):
        if batch % self.log_interval == 0:
            seen = min(batch * self.batch_size, self.epoch_size)
            print(f"Train Epoch: {self.epoch} [{seen}/{self.epoch_size} "
                  f"({100.0 * seen / self.epoch_size:.0f}%)]\tLoss: {logs['loss']:.6f}", flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--log-interval", type=int, default=100)
    parser.add_argument("--max-samples", type=int, default=0, help="train on the first N images (0: all)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--model-dir", default=os.environ.get("SM_MODEL_DIR"))
    parser.add_argument("--train", default=os.environ.get("SM_CHANNEL_TRAINING"))
    parser.add_argument("--test", default=os.environ.get("SM_CHANNEL_TESTING"))
    args = parser.parse_args()

    keras.utils.set_random_seed(args.seed)
    x_train, y_train = load_split(args.train, "train")
    x_test, y_test = load_split(args.test, "t10k")
    if args.max_samples:
        x_train, y_train = x_train[:args.max_samples], y_train[:args.max_samples]

    model = build_model(args.learning_rate)
    model.fit(x_train, y_train, batch_size=args.batch_size, epochs=args.epochs, verbose=0,
              callbacks=[SeedLog(len(x_train), args.batch_size, args.log_interval)])
    loss, _ = model.evaluate(x_test, y_test, batch_size=1000, verbose=0)
    correct = int((model.predict(x_test, batch_size=1000, verbose=0).argmax(axis=1) == y_test).sum())
    print(f"Test set: Average loss: {loss:.4f}, Accuracy: {correct}/{len(y_test)} "
          f"({100.0 * correct / len(y_test):.0f}%)", flush=True)

    model.export(os.path.join(args.model_dir, "1"), format="tf_saved_model", verbose=False)
    print(f"saved the model under {args.model_dir}/1", flush=True)


if __name__ == "__main__":
    tf.get_logger().setLevel("ERROR")
    main()
