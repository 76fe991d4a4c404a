"""The SageMaker platform: training jobs, endpoints and pipelines through the sagemaker SDK (2.x).

Select it per role in ``modelcycle.yaml``::

    training:
      platform: sagemaker          # a SageMaker training job
      role: arn:aws:iam::123456789012:role/SageMakerExecutionRole   # or MODELCYCLE_SAGEMAKER_ROLE
      bucket: my-bucket            # default: sagemaker-<region>-<account>, created if missing
      instance_count: 2            # with backend: gloo, DistributedDataParallel over the hosts
      backend: gloo
      instance_type: ml.c5.xlarge
    serving:
      platform: sagemaker          # a real-time endpoint (model → endpoint config → endpoint)
      instance_type: ml.m5.large

What AWS must provide (the tests, against moto, cannot prove these):

- credentials for boto3's chain (profile, SSO, environment or instance role) allowed to call
  ``sagemaker:CreateTrainingJob/DescribeTrainingJob/CreateModel/CreateEndpointConfig/
  CreateEndpoint/Describe*/Delete*``, ``s3:PutObject/GetObject/ListBucket/HeadBucket``
  (``CreateBucket`` for the default bucket), ``sts:GetCallerIdentity``, ``logs:GetLogEvents``
  and ``iam:PassRole`` on the execution role;
- an execution role SageMaker can assume (trust ``sagemaker.amazonaws.com``) that reads and writes
  the bucket's prefix, pulls the AWS deep-learning-container images from ECR and writes CloudWatch
  logs (``AmazonSageMakerFullAccess`` covers it; a scoped policy is better);
- an S3 bucket in the job's region;
- modelcycle installable in the container: the source dir's ``requirements.txt`` says
  ``modelcycle==<version>`` (``training.requirements`` replaces it, e.g. with a private index or a
  wheel URL), and the default framework images (PyTorch 2.6 / Python 3.12, TensorFlow 2.19) meet
  modelcycle's Python >= 3.11.
"""
