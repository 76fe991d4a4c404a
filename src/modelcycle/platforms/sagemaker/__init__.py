"""The SageMaker platform: training jobs, endpoints and pipelines through the sagemaker SDK."""
