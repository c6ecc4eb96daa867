package sinks

// DeviceInfo is what the gateway knows about a device beyond its id: the
// name and type people gave it in Wittra (empty when unknown).
type DeviceInfo struct {
	Name string
	Type string
}

// Directory answers what is known about a device. Sinks that show names
// (Cumulocity child devices, Home Assistant discovery, state topics) take
// one; a nil Directory means no names are known. Implementations must answer
// from memory, never blocking delivery.
type Directory interface {
	Device(project, device string) (DeviceInfo, bool)
}
