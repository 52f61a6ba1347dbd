"""Policy beside the flow: grants (model, store, principals), ACLs and capctl's settings."""
