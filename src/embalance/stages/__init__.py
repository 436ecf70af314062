"""Pipeline stages: thin shells that read params, call the experiment core and write outputs."""
