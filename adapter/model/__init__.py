"""Pure data shapes: the optimizer's SystemSpec and (later) the Kubernetes objects."""
