"""modelrollout: progressive rollouts of ML models on Istio, judged by Prometheus.

The package is layered so that each layer imports only the ones below it:

    handlers (kopf)  ->  reconciler  ->  core (pure)  <-  spec / status / durations
                          |      \
                          v       v
                    routers    providers        (adapters behind the ports)

``core`` does no I/O and reads no clock: it is where every rule of the state
machine lives and is tested.  ``localstack`` (emulator, mesh simulator, a real
Prometheus) is for the demo and the tests and is never imported by the operator.
"""

GROUP = "modelrollout.io"
VERSION = "v1alpha1"
PLURAL = "modelexperiments"
KIND = "ModelExperiment"
# Threads that run ticks (``modelrollout run --workers``); most of a tick waits on the API
# server or Prometheus, so more threads than cores keep a burst of due ticks from queueing.
DEFAULT_WORKERS = 16
