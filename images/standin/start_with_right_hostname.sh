#!/usr/bin/env bash
# Shaped like the DLC's start_with_right_hostname.sh: `train` runs the toolkit without exec under `bash -m`
# (so PID 1 is bash, as in the real DLC), anything else goes through eval. The real script also LD_PRELOADs a
# gethostname() shim built from resourceconfig.json; nothing in smimg's tests depends on it.
if [[ "$1" == "train" ]]; then
    train
else
    eval "$@"
fi
