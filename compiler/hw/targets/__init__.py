"""The bundled hardware descriptions (*.hw), shipped as package data."""
