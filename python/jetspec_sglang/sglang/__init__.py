"""The SGLang plugin: registration, flag validation, hooks and the JETSPEC worker (imports sglang)."""
