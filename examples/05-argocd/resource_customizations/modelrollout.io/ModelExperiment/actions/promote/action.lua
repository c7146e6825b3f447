-- Sets the gate annotation modelrollout.io/promote to a fresh value: the operator
-- acts on a gate once per value, so every use needs a new one: the UTC time
-- to the second, then <time>-1, <time>-2, ... for more uses within a second.
-- Argo CD's sandbox offers os.date through require("os") (its own Rollout
-- restart action does the same).
local os = require("os")
local GATE = "modelrollout.io/promote"

if obj.metadata.annotations == nil then
  obj.metadata.annotations = {}
end
local current = obj.metadata.annotations[GATE]
local stamp = os.date("!%Y-%m-%dT%H:%M:%SZ")
local value, previous = stamp, stamp
for n = 1, 1000 do
  if current == previous then -- this second's value is set already: take the next one
    value = stamp .. "-" .. n
    break
  end
  previous = stamp .. "-" .. n
end
obj.metadata.annotations[GATE] = value
return obj
