"""CCC workflow service: durable DAG orchestration over the NATS bus."""
