"""Operating a deployment: kill switch, self-test, status, verify, the local stack and its Redis, the demo, Flower."""
