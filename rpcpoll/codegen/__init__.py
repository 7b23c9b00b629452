"""Code generation: .proto -> protoc descriptor set -> model -> Jinja2 templates -> Python."""
