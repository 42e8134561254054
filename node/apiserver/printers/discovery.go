package printers

import (
	"strconv"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// EndpointSlice, as kubectl shows it from kube-apiserver.

func endpointSliceColumns() []metav1.TableColumnDefinition {
	return []metav1.TableColumnDefinition{
		nameColumn(),
		{Name: "AddressType", Type: "string", Description: discoveryv1.EndpointSlice{}.SwaggerDoc()["addressType"]},
		{Name: "Ports", Type: "string", Description: discoveryv1.EndpointSlice{}.SwaggerDoc()["ports"]},
		{Name: "Endpoints", Type: "string", Description: discoveryv1.EndpointSlice{}.SwaggerDoc()["endpoints"]},
		ageColumn(),
	}
}

func printEndpointSlice(obj *discoveryv1.EndpointSlice, now time.Time) metav1.TableRow {
	return metav1.TableRow{Cells: []any{obj.Name, string(obj.AddressType), formatDiscoveryPorts(obj.Ports),
		formatDiscoveryEndpoints(obj.Endpoints), translateTimestampSince(obj.CreationTimestamp, now)}}
}

// formatDiscoveryPorts lists up to three ports (number, else name, else
// "*") and how many more there are.
func formatDiscoveryPorts(ports []discoveryv1.EndpointPort) string {
	if len(ports) == 0 {
		return "<unset>"
	}
	const max = 3
	list := []string{}
	for _, p := range ports {
		if len(list) == max {
			break
		}
		switch {
		case p.Port != nil:
			list = append(list, strconv.Itoa(int(*p.Port)))
		case p.Name != nil:
			list = append(list, *p.Name)
		default:
			list = append(list, "*")
		}
	}
	return listWithMore(list, len(ports) > max, len(ports), max)
}

// formatDiscoveryEndpoints lists up to three addresses and how many more.
func formatDiscoveryEndpoints(eps []discoveryv1.Endpoint) string {
	if len(eps) == 0 {
		return "<unset>"
	}
	const max = 3
	list := []string{}
	count, more := 0, false
	for _, e := range eps {
		for _, a := range e.Addresses {
			count++
			if len(list) == max {
				more = true
				continue
			}
			list = append(list, a)
		}
	}
	return listWithMore(list, more, count, max)
}
