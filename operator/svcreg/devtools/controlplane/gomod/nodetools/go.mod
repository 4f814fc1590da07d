module svcreg.io/controlplane/nodetools

go 1.26.0
