"""A local SageMaker training API (`smimg local api`): CreateTrainingJob and its kin answered with local-mode jobs
(``plan``: the request checked and planned, pure; ``store``: the job records; ``runner``: one job run; ``server``:
the endpoint, with moto serving S3, CloudWatch Logs and STS beside it)."""
