"""What the host (the smimg toolkit) and the image (this entrypoint, the build's installer) must agree on.

The one place for SageMaker's /opt/ml layout, smimg's /opt/smimg layout, the ``SMIMG_*`` variables and reserved
hyperparameters, launcher and console-script names, build secret ids, label keys and the installer's report line.
Standard library only and free of side effects: the toolkit imports it on the host, the entrypoint in the image,
and the host hands the installer the values it needs in its instruction file.
"""

from __future__ import annotations

# --- SageMaker's tree: paths relative to /opt/ml (SAGEMAKER_BASE_DIR), as the training toolkit lays it out ---
OPT_ML = "/opt/ml"
BASE_DIR_ENV = "SAGEMAKER_BASE_DIR"
RESOURCE_CONFIG = "input/config/resourceconfig.json"
HYPERPARAMETERS = "input/config/hyperparameters.json"
INPUT_DATA_CONFIG = "input/config/inputdataconfig.json"
DATA_DIR = "input/data"
MODEL_DIR = "model"
OUTPUT_DIR = "output"
OUTPUT_DATA_DIR = "output/data"
FAILURE_FILE = "output/failure"
SUCCESS_FILE = "output/success"
CHECKPOINTS_DIR = "checkpoints"
CODE_DIR = "code"
FAILURE_LIMIT = 1024  # DescribeTrainingJob's FailureReason holds at most this many characters
PEER_FAILURE_PREFIX = "peer "  # a failure file that starts so blames another host ("peer algo-2 failed: ...")
TRAINING_JOB_NAME_ENV = "TRAINING_JOB_NAME"
PROGRAM_ENV = "SAGEMAKER_PROGRAM"
DEFAULT_GROUP = "homogeneousCluster"
DEFAULT_INTERFACE = "eth0"


def opt_ml(relative: str) -> str:
    """An absolute path inside the container's /opt/ml."""
    return f"{OPT_ML}/{relative}"


# --- smimg's own tree in the image --------------------------------------------------------------------------
SMIMG_HOME = "/opt/smimg"
BIN_DIR = f"{SMIMG_HOME}/bin"
PYTHON = f"{BIN_DIR}/python"  # a shim to the base's own interpreter, written by the first build step
BAKED_CODE_DIR = f"{SMIMG_HOME}/code"  # never /opt/ml/code: code there disables the SDK's sourcedir upload
PACKAGES_FILE = f"{SMIMG_HOME}/packages.txt"  # every installed distribution, name==version
CONSTRAINTS_FILE = f"{SMIMG_HOME}/base-constraints.txt"  # the base's guarded torch/CUDA stack
INSTALLER = f"{SMIMG_HOME}/installer.py"
REQUIREMENTS_DIR = f"{SMIMG_HOME}/requirements"  # the spec's requirements files and instruction file
DIST_DIR = f"{SMIMG_HOME}/dist"  # the entrypoint wheel and its instruction file
INSTRUCTIONS_FILE = "install.json"  # beside the inputs in REQUIREMENTS_DIR and DIST_DIR

# --- console scripts and the container command ----------------------------------------------------------------
TRAIN_SCRIPT = "smimg-train"
LAUNCH_SCRIPT = "smimg-launch"
CONSOLE_SCRIPTS = {
    TRAIN_SCRIPT: "smimg_entrypoint.main:main",
    LAUNCH_SCRIPT: "smimg_entrypoint.main:launch_main",
}
TRAIN_COMMAND = "train"  # what SageMaker passes as the container's argument

# --- launchers ---------------------------------------------------------------------------------------------------
TORCHRUN = "torchrun"
ACCELERATE = "accelerate"
PYTHON_LAUNCHER = "python"
LAUNCHERS = (TORCHRUN, ACCELERATE, PYTHON_LAUNCHER)
# accelerate's own variable for mixed precision: its launcher is given it as --mixed_precision (else it sets "no").
ACCELERATE_MIXED_PRECISION = "ACCELERATE_MIXED_PRECISION"
DEFAULT_LAUNCHER = TORCHRUN
BOOL_VALUE = "value"  # --flag True / --flag False, the toolkit's style
BOOL_FLAG = "flag"  # a bare --flag for True, nothing for False (argparse store_true)
BOOL_STYLES = (BOOL_VALUE, BOOL_FLAG)

# --- hyperparameters the platform, the SDK or smimg reserve: they configure the launch, never reach the script --
SAGEMAKER_PREFIX = "sagemaker_"  # the platform's and the SDK's
RESERVED_PREFIXES = (SAGEMAKER_PREFIX, "smimg_")
RESERVED_KEYS = ("_tuning_objective_metric", "default_user_module_name")
HP_PROGRAM = "sagemaker_program"
HP_SUBMIT_DIRECTORY = "sagemaker_submit_directory"
HP_TORCH_DISTRIBUTED = "sagemaker_torch_distributed_enabled"
HP_DISTRIBUTION_GROUPS = "sagemaker_distribution_instance_groups"
HP_LOG_LEVEL = "sagemaker_container_log_level"
HP_JOB_NAME = "sagemaker_job_name"
HP_REGION = "sagemaker_region"
HP_MPI_PROCESSES_PER_HOST = "sagemaker_mpi_num_of_processes_per_host"
# The SDK's own parameters (sagemaker-training's SAGEMAKER_HYPERPARAMETERS): every other sagemaker_* hyperparameter
# is a framework parameter (SM_FRAMEWORK_PARAMS).
SDK_HYPERPARAMETERS = (
    HP_PROGRAM,
    HP_SUBMIT_DIRECTORY,
    "sagemaker_enable_cloudwatch_metrics",
    HP_REGION,
    HP_LOG_LEVEL,
    HP_JOB_NAME,
    "default_user_module_name",
    "_tuning_objective_metric",
    "sagemaker_s3_output",
)
# SDK v3's drivers write the job's distribution here (Torchrun(process_count_per_node) among it).
SDK_DISTRIBUTED_FILE = "input/data/sm_drivers/distributed.json"
FRAMEWORK_MODULE_ENV = "SAGEMAKER_TRAINING_MODULE"
# The HF DLCs' entrypoint sources this for their performance defaults; smimg's PID 1 replaces that entrypoint.
HF_OPTIMIZATIONS_SCRIPT = "/usr/local/bin/hf_optimizations.sh"

# --- smimg settings: each has a reserved hyperparameter (per job) and an SMIMG_* variable (per image or host) ----
# The hyperparameter wins over the variable, the variable over the default.
LAUNCHER_ENV = "SMIMG_LAUNCHER"  # the image's default launcher, from the spec
LAUNCHER = ("smimg_launcher", LAUNCHER_ENV)
BOOL_STYLE = ("smimg_bool_style", "SMIMG_BOOL_STYLE")
MASTER_PORT = ("smimg_master_port", "SMIMG_MASTER_PORT")
NPROC_PER_NODE = ("smimg_nproc_per_node", "SMIMG_NPROC_PER_NODE")
# Variables only: timing and wiring of one container, not of the job.
CODE_DIR_ENV = "SMIMG_CODE_DIR"
ENTRY_POINT_ENV = "SMIMG_ENTRY_POINT"
WATCH_PORT_ENV = "SMIMG_WATCH_PORT"
STOP_GRACE_ENV = "SMIMG_STOP_GRACE"
ABORT_GRACE_ENV = "SMIMG_ABORT_GRACE"
RENDEZVOUS_TIMEOUT_ENV = "SMIMG_RENDEZVOUS_TIMEOUT"
PEER_TIMEOUT_ENV = "SMIMG_PEER_TIMEOUT"
DNS_TIMEOUT_ENV = "SMIMG_DNS_TIMEOUT"
HOST_ADDRESSES_ENV = "SMIMG_HOST_ADDRESSES"  # tests only: host name -> address, instead of DNS

# --- build secrets (BuildKit ids, mounted under /run/secrets for one step, never in a layer) ---------------------
SECRETS_DIR = "/run/secrets"
SECRET_INDEX_URL = "pip-index-url"
SECRET_EXTRA_INDEX_URL = "pip-extra-index-url"
SECRET_CA_BUNDLE = "pip-cert"

# --- image labels -------------------------------------------------------------------------------------------------
LABEL_PREFIX = "dev.smimg"
LABEL_VERSION = f"{LABEL_PREFIX}.version"
LABEL_CONTENT_HASH = f"{LABEL_PREFIX}.content-hash"
LABEL_SPEC = f"{LABEL_PREFIX}.spec"
LABEL_LAUNCHER = f"{LABEL_PREFIX}.launcher"
LABEL_PACKAGES = f"{LABEL_PREFIX}.packages"
LABEL_STANDIN_INPUTS = f"{LABEL_PREFIX}.standin.inputs"
LABEL_JOB = f"{LABEL_PREFIX}.job"  # on a local job's containers and network: the job's project name
LABEL_OCI_TITLE = "org.opencontainers.image.title"
LABEL_OCI_VERSION = "org.opencontainers.image.version"
LABEL_OCI_BASE_NAME = "org.opencontainers.image.base.name"
LABEL_OCI_BASE_DIGEST = "org.opencontainers.image.base.digest"

# --- the installer's report: one line, the marker then a JSON object with what, requirement, reason, fix ----------
INSTALL_FAILURE_MARKER = "SMIMG-INSTALL-FAILURE"
