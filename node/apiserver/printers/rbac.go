package printers

import (
	"strings"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Roles and bindings, as kubectl shows them from kube-apiserver:
//
//	NAME            CREATED AT
//	cluster-admin   2026-11-26T16:00:00Z
//
//	NAME   ROLE               AGE   USERS   GROUPS       SERVICEACCOUNTS   (the last three with -o wide)
//	dev    ClusterRole/edit   5m            developers   dev/ci

func roleColumns() []metav1.TableColumnDefinition {
	return []metav1.TableColumnDefinition{
		nameColumn(),
		{Name: "Created At", Type: "date", Description: metav1.ObjectMeta{}.SwaggerDoc()["creationTimestamp"]},
	}
}

func printRole(obj *rbacv1.Role, _ time.Time) metav1.TableRow {
	return metav1.TableRow{Cells: []any{obj.Name, obj.CreationTimestamp.UTC().Format(time.RFC3339)}}
}

func printClusterRole(obj *rbacv1.ClusterRole, _ time.Time) metav1.TableRow {
	return metav1.TableRow{Cells: []any{obj.Name, obj.CreationTimestamp.UTC().Format(time.RFC3339)}}
}

func bindingColumns() []metav1.TableColumnDefinition {
	return []metav1.TableColumnDefinition{
		nameColumn(),
		{Name: "Role", Type: "string", Description: rbacv1.RoleBinding{}.SwaggerDoc()["roleRef"]},
		ageColumn(),
		{Name: "Users", Type: "string", Priority: 1, Description: "Users in the roleBinding"},
		{Name: "Groups", Type: "string", Priority: 1, Description: "Groups in the roleBinding"},
		{Name: "ServiceAccounts", Type: "string", Priority: 1, Description: "ServiceAccounts in the roleBinding"},
	}
}

func bindingRow(meta metav1.ObjectMeta, ref rbacv1.RoleRef, subjects []rbacv1.Subject, now time.Time) metav1.TableRow {
	var users, groups, sas []string
	for _, s := range subjects {
		switch s.Kind {
		case rbacv1.UserKind:
			users = append(users, s.Name)
		case rbacv1.GroupKind:
			groups = append(groups, s.Name)
		case rbacv1.ServiceAccountKind:
			sas = append(sas, s.Namespace+"/"+s.Name)
		}
	}
	return metav1.TableRow{Cells: []any{meta.Name, ref.Kind + "/" + ref.Name, translateTimestampSince(meta.CreationTimestamp, now),
		strings.Join(users, ", "), strings.Join(groups, ", "), strings.Join(sas, ", ")}}
}

func printRoleBinding(obj *rbacv1.RoleBinding, now time.Time) metav1.TableRow {
	return bindingRow(obj.ObjectMeta, obj.RoleRef, obj.Subjects, now)
}

func printClusterRoleBinding(obj *rbacv1.ClusterRoleBinding, now time.Time) metav1.TableRow {
	return bindingRow(obj.ObjectMeta, obj.RoleRef, obj.Subjects, now)
}
