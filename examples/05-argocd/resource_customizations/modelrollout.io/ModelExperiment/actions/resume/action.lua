-- Lets a paused experiment carry on.  spec.paused is part of the spec: if Git
-- sets it too, self-heal puts Git's value back.
obj.spec.paused = false
return obj
