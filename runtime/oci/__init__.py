"""OCI artifacts: models on a registry (push, pull, an action cache) and in image-layout bundles."""
