"""Open Inference Protocol v2 over gRPC: KServe's ``grpc_predict_v2.proto`` (package ``inference``,
service ``GRPCInferenceService``), the modules generated from it (``make proto``) and the server
(:mod:`conveyor.serving.grpc.server`) the model-server app starts beside its REST port."""
