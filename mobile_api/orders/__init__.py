"""The engineers' orders on the PDA (/mobile/v1/orders, /mobile/v1/location)."""
