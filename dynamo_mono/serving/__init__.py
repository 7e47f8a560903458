"""The request pipeline between the HTTP layer and the engines: models, instance pool, generation."""
