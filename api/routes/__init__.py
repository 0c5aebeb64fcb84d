"""The API's resources, one blueprint each, all below /v1."""
