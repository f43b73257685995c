"""smimg: build, prove locally and ship custom Amazon SageMaker training images."""

__version__ = "0.1.0"
