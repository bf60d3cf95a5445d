"""The taxifare sample trainer: predicts New York taxi fares with TensorFlow/Keras.

``trainer.task`` parses the arguments and runs the job; ``trainer.model`` holds the ML.
"""
