:
boom