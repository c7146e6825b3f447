-- Holds the experiment where it is (traffic and step unchanged).  spec.paused
-- is part of the spec: if Git sets it too, self-heal puts Git's value back.
obj.spec.paused = true
return obj
