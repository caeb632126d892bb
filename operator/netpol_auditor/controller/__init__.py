"""The live operator: kopf watches feed the reachability index; metrics, Events, health and HA around it."""
