"""dynamo-mono plugin: media generation (image, video, audio) with local diffusers pipelines."""
