"""Model backends. Importing this package registers them; torch and the model libraries load only when a backend
is built, so naming one from a job spec stays cheap."""

from seir.operators.backends import (  # noqa: F401  (imported for their @register)
    clip,
    diffusers_image,
    engines,
    openai_chat,
    openai_image,
    sentence_embed,
    transformers_chat,
    transformers_vision,
)
